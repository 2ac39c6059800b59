"""What the host knows about workloads: each kind's workload contract (``contracts``), the
on-disk cache of trained reference models (``cache``) and the lm-eval adapter that scores
any ``model(input_ids) -> logits`` on an lm-eval task (``lmeval``).

No concrete workload lives here: those are plugins (``plugins/workloads``, and single-method
ones beside their method), registered through the same hook a third party uses, so the
host imports without transformers, lm-eval, datasets or any data package.
"""
