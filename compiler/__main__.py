"""python -m compiler: the rollout command line."""

from compiler.cli import run

if __name__ == "__main__":
    run()
