"""The paper's findings and SFT improvements on SmolLM2-135M-Instruct on 2 CPU cores:
mixed_arithmetic (three one-digit terms with + - *) as the complex target, chosen by the
targets stage (docs/reproduction_power.md: of the candidates it is the one SFT moved most, to
0.13 accuracy), four basic tasks it draws on, spell_backward as an unrelated control.
gsm_symbolic, the 2026-11-25 run's target, stays the second target (`findings.second_targets`:
trained alone on every seed and fitted on the same basic tasks, Finding 2 only); a full study
with it as the target: `--config.findings.target=gsm_symbolic
--config.findings.second_targets=() --config.out_dir=runs/reproduce_smollm2_gsm
--config.record_dir=results/reproduce_smollm2_gsm` (a variant keeps its own folders).

  python scripts/reproduce.py --config configs/reproduce_smollm2.py --stages targets,pilot,power \
      --config.findings.probe_samples=16    # the pilot as run (16 probes), and the design
  python scripts/reproduce.py --config configs/reproduce_smollm2.py    # the study

Scale up on a TPU/GPU by overriding, e.g. `--config.findings.steps=400
--config.findings.train_samples=4000 "--config.grid.budgets=(16,64,256,1024)"
--config.grid.eval_samples=1000 --config.base.train.batch_size=64`, or point
`base.model.pretrained` at a 7B checkpoint with a `base.mesh` that fits it.
"""

from headjax.app.reproduce.config import default_reproduce_config


def get_config():
    c = default_reproduce_config()
    c.out_dir = "runs/reproduce_smollm2"
    c.record_dir = "results/reproduce_smollm2"  # kept in the repository
    c.doc = "docs/reproduction.md"
    c.notes = "docs/reproduction_notes.md"
    c.compare_configs = ("configs/reproduce_gemma3_270m.py",)  # its verdicts beside this model's
    b = c.base
    b.model.pretrained = "smollm2-135m-instruct"
    b.data.max_len = 192
    b.train.batch_size = 8
    b.train.lr = 1e-4
    b.train.warmup_steps = 0
    b.train.schedule = "cosine"
    b.eval.max_new_tokens = 8
    b.eval.batch_size = 48
    b.heads.batch_size = 16
    c.findings.target = "mixed_arithmetic"
    # gcd, not basic_arithmetic: basic_arithmetic's generator covers mixed_arithmetic's questions
    # (the target is its 3-term, 1-digit setting), so a basic task holding the target itself
    # would inflate Finding 2's R^2.
    c.findings.basic = ("gcd", "chain_sum", "products", "leg_counting")
    c.findings.unrelated = ("spell_backward",)
    c.findings.train_samples = 256
    # The powered design (docs/reproduction_power.md): 192 probes per task bring Finding 2's R^2
    # within about +-0.05 (the pilot's pattern noise is almost all probe sampling). SFT seeds
    # per task give the findings intervals over seeds (not only over probes) and the verdicts;
    # seed 0 is the single run per task of before. Three seeds left R^2's interval at +-0.12,
    # wider than the probes' (the seeds' spread is the larger term), so seeds were added (the
    # report's "Power over seeds" line says how many reach +-0.05 at the seeds' spread).
    c.findings.seeds = (0, 1, 2, 3, 4)
    c.findings.second_targets = ("gsm_symbolic",)
    c.findings.steps = 16
    c.findings.probe_samples = 192
    c.findings.probe_every = 8
    # The ablation check on 64 of the 192 probe samples: 6 tasks x 11 head sets of forwards
    # would take about an hour of the 2-core CPU on all of them, 20 minutes on 64.
    c.findings.ablation_samples = 64
    # The powered comparison: pattern-weighted warm start against a random mixture and plain SFT,
    # 10 seeds, 500 test examples (a 0.03 accuracy difference at 80% power). The power analysis
    # took the accuracy spread of 32-step runs; 128 samples x 2 epochs is 32 target steps (plain
    # SFT moves the target from 5% to 13% there), while 32 samples give 8 steps, too few to
    # move it at all (docs/reproduction_notes.md). Other methods and budgets (heads_*, joint_*,
    # select_*, lora_*) are left out for CPU time; add them with --config.grid.methods=... :
    # the grid only runs the cells it lacks.
    c.grid.budgets = (32, 128)
    c.grid.epochs = 2
    c.grid.methods = ("plain", "warm_pattern", "warm_random")
    c.grid.seeds = tuple(range(10))
    c.grid.preliminary_samples = 128
    c.grid.warm_steps = 16
    c.grid.head_fraction = 0.1
    c.grid.eval_samples = 500
    # Candidate targets (`--stages targets`): 5 tasks x (2 x 200 evaluated examples + 32 steps).
    c.targets.candidates = ("mixed_arithmetic", "chain_sum_3", "decimal_chain_sum",
                            "simple_equations", "gsm_symbolic")
    c.targets.eval_samples = 200
    c.targets.steps = 32
    # The design search (`--stages pilot,power`): its choices
    c.power.probes = (16, 32, 64, 96, 128, 192)
    c.power.findings_seeds = (1, 2, 3)
    c.power.grid_seeds = (3, 5, 8, 10, 15, 20, 30)
    c.power.eval_samples = (200, 500, 1000)
    c.power.grid_budgets = (128,)  # the budget whose target steps match the pilot's 32
    return c
