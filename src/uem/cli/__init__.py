"""`uemctl`: parses arguments and calls into uem. No logic lives here."""
