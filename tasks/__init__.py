"""Stages: one module per stage, pure functions first and one thin Prefect @task shell last."""
