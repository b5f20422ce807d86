"""Post-call accounting: cost, spend rows, and Lago usage reporting."""
