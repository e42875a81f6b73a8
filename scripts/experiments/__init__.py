"""Tools that measure the method (benchmark, reference runs, overhead, more data, planted faults); not the
product, and not exported with the bundle."""
