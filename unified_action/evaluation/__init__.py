"""`uact eval`: open-loop rollouts of an exported world model on held-out clips, metrics per horizon step, pictures."""

from unified_action.evaluation.metrics import PSNR_CAP_DB, psnr, ssim
from unified_action.evaluation.report import write_report
from unified_action.evaluation.rollouts import DatasetResult, EvalResult, Example, evaluate

__all__ = ["PSNR_CAP_DB", "DatasetResult", "EvalResult", "Example", "evaluate", "psnr", "ssim", "write_report"]
