"""Evaluation runs: questions through the real pipeline, stored rows, fitting, applying, reports.

The engine (grading, fitting, replay, search) is `routing.evaluation`, plain data; this package
is its ORM side: `runner` drives `chatbot.pipeline.answer_question` and stores
`routing.EvaluationResult` rows from the pipeline's own result, `rows` turns them into replay
rows, `fitting` chooses weights, thresholds and floor on the fit split, `apply` is the one
writer of a policy to the live tiers, and `report` gives the figures on the test split and the
replay-vs-live agreement.
"""
