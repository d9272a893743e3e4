"""The student: a LLaVA-architecture model, its samples, training loop and curriculum."""
