"""Evaluator: TFX's Evaluator that records which baseline it compared against."""
