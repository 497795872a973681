"""PostgreSQL access: sessions with pgops' safety settings, SQL files, local clusters."""
