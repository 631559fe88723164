"""Pure decision logic: worker placement and the name registry. No I/O, no clocks."""
