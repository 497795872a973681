"""Health and fitness checks of the Fixia database."""
