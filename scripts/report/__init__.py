"""The audit report of a pruning run: figures (``figures``), its inputs (``inputs``) and the Markdown
summary (``markdown``). ``python -m scripts.report --selection_csv SEL --out_dir DIR``."""

from scripts.report.markdown import make_report

__all__ = ["make_report"]
