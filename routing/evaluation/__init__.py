"""The evaluation engine: grading, fitting the scorer, replaying policies, searching thresholds.

Plain data only (no ORM, no conversations): it knows tiers and scores. `chatbot.evaluation`
runs the questions through the real pipeline and turns the stored rows into `QuestionRow`s.

- `grading`: SQuAD's exact match and token F1, and the scorer's label;
- `fit`: the scorer's logistic weights, chosen by stratified, repeated cross-validation;
- `replay`: THE replay of a policy on stored rows, through the live cascade's own decisions;
- `search`: THE threshold search (tier subsets, thresholds, relevance floors, goals, frontier).
"""
