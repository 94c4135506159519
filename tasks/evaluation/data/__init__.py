"""Built-in evaluation data: ``gold.jsonl``, requests written for this project with their gold plans."""
