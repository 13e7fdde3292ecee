"""Command-line tools: ast-build, ast-restore, ast-check, ast-bench (each ``main(argv) -> int``)."""
