"""A stand-in for a user's own project package: never installed in any image."""
