"""Command-line tools: ast-export, ast-build, ast-restore, ast-check, ast-bench (each ``main(argv) -> int``)."""
