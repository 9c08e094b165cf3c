"""Security core benchmark: CSR signing, token validation, enrolment critical path, bcrypt cost."""
