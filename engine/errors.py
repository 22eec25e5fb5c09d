"""The one exception type users see.

Every error a user can cause (an unknown name, a bad file, a wrong shape, a missing
run) raises :class:`AtlasError` with a message that says what was wrong and what to
do about it. The app shows the message and keeps running; the CLI prints it and
exits with status 2.
"""


class AtlasError(Exception):
    """A problem with user input or stored files, explained for the user."""
