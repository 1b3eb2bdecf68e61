"""Training: recipes, the ``model.fit`` loop, strategies and schedules."""
