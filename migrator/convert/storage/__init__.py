"""Moving bytes: file copies, ranges, links and write-back (fileops), worker threads, progress reporting."""
