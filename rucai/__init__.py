"""rucai: one experiment runner for RUCAIBox papers.

Keep this module import-light: `run.py --help` and config errors must answer without torch.
"""

__version__ = "0.1.0"
