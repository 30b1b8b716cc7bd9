"""The report: tables and figures from the analyses' outputs."""
