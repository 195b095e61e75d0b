"""Fine-tuning tasks: examples -> features -> metrics (see common.py for the contracts)."""
