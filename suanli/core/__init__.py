"""Pure domain code: names, roles, quantities and errors. No I/O."""
