import fire
from scripts.report import make_report

if __name__ == "__main__":
    fire.Fire(make_report)
