from scripts.report import make_report
from scripts.utils.cli import fire_strict

if __name__ == "__main__":
    fire_strict(make_report)
