"""Destinations: the DCP writer, the copy and stream weight routes, the plan, the NeMo 2.0 context writer (nemo2)
and its fiddle JSON; one module per destination."""
