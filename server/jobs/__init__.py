"""Job lifecycle rules."""
