"""Exceptions a user can cause. The CLI prints their message on one line and exits 2."""


class UserError(Exception):
    """Bad input from the user (file, flag, config); the message says what is wrong and what to do."""
