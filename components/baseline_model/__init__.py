"""BaselineModel: the model currently pushed for this model name, as the Evaluator's baseline."""
