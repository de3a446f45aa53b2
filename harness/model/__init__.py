"""One model file as read: its card, how images feed it, what it is, and copies of it (surgery, artifacts)."""
