"""Command-line entry points. Each subcommand lives in its own module and is imported only when used,
so `nemo-migrate lint` never pays for (or imports) the converter's torch dependency."""
