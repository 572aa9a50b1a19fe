"""The one exception type for mistakes a user can fix (bad paths, configs, data)."""


class UserError(Exception):
    """A problem in the user's input. The CLI prints its message as one line and exits 2.

    Messages name the problem and the fix, e.g.
    ``checkpoint runs/x/ckpt_a not found: pass a directory written by `connect width-sweep```.
    """
