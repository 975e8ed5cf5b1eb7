"""The grids' cell lists and the presets of shared train.py flags (each with its iteration budget
per grid) that experiment_grid.py's --grid and --preset choose from; bench/bench_convergence.py
builds its recipes on the same presets."""
from __future__ import annotations

GRIDS = {
    "quickstart": ["none", "uniform_50", "gaussian_50"],
    "table1": ["none", "uniform_50", "gaussian_50", "ppca_50", "nn_dist_50",
               "gaussian_50_random_inceptionv3"],
    "figure3": [f"gaussian_{r}" for r in range(10, 100, 10)] + ["none"],
}
# The CPU recipe's shared flags (README, "A CPU recipe that learns"; bench/bench_convergence.py): a
# ch-16 BigGAN on Fashion-MNIST at 32 px in bf16 and channels_last, Adam 1e-3/1e-3 with beta1 0.5,
# two D steps, dim_z 128, a short EMA, scored with the offline efficientnet_lite0 at 224 px.
_FMNIST32_CPU = ("--dataset FMNIST32_hdf5 --load_in_mem --shuffle --num_workers 0 --G_ch 16 --D_ch 16 "
                 "--G_attn 0 --D_attn 0 --G_shared --hier --dim_z 128 "
                 "--num_D_steps 2 --G_lr 1e-3 --D_lr 1e-3 --G_B1 0.5 --D_B1 0.5 --ema --use_ema "
                 "--ema_decay 0.99 --ema_start 0 --amp bf16 --channels_last --save_every 500 "
                 "--test_every 1000000000 --log_every 50 --pbar none --embedding efficientnet_lite0 "
                 "--feature_net efficientnet_lite0 --num_inception_images 1000 --num_pr_images 1000")
_MBSTD = " --batch_size 16 --shared_dim 16 --D_mbstd_group 4"
# Shared train.py flags by preset and grid; the command line's flags come after them and win (so a
# preset's later --G_ch overrides _FMNIST32_CPU's).
PRESETS = {
    # The first CPU recipe: batch 64, class embedding 32 (the README's Table 1 was measured with it).
    "fmnist32_cpu": (_FMNIST32_CPU + " --batch_size 64 --shared_dim 32",
                     {"quickstart": 350, "table1": 1000, "figure3": 700}),
    # The minibatch-std recipe: batch 16, class embedding 16, a minibatch-std D. On a 2-core Xeon an
    # iteration costs ~1/2.7 of a batch-64 one (0.33-0.39 against 0.87-1.06 s), so these budgets take
    # about the wall time of fmnist32_cpu's (README, "What the quickstart shows").
    "fmnist32_cpu_mbstd": (_FMNIST32_CPU + _MBSTD, {"quickstart": 1000, "table1": 3000, "figure3": 2000}),
    # Table 1's (and the quickstart's until the width-8 preset below): the minibatch-std recipe at width 12
    # (0.57x the FLOPs of an iteration, the same course per iteration). 2000 iterations: at 1000 and 1500
    # selection moved no fidelity metric beyond the seed spread; at 2000 its precision gain is resolved at
    # three seeds (README, the quickstart), and Table 1's 18 runs fit in 90 minutes on 2 cores.
    "fmnist32_cpu_mbstd_ch12": (_FMNIST32_CPU + _MBSTD + " --G_ch 12 --D_ch 12",
                                {"quickstart": 2000, "table1": 2000, "figure3": 2000}),
    # The quickstart's: the best 10-minute recipe (bench_convergence.py's fmnist32_cpu_bs32_sd16_mbstd4_ch8_GnoSN,
    # the same flags): width 8, batch 32, G without spectral norm, meant to run with --compile (quickstart.sh
    # adds it). At 2400 iterations its selection resolves density up at three seeds and precision up at three
    # on both EPYCs measured (p .053 on an AMX Xeon) and at five on every host that ran five, where width 12's
    # 2000 resolve precision only; a run costs about width 12's on an AVX2-only CPU (fp32)
    # and an estimated ~0.6x on the AVX512-BF16 EPYC, where the step is not compute-bound (README, "What the quickstart shows").
    "fmnist32_cpu_mbstd_ch8_bs32_GnoSN": (_FMNIST32_CPU + _MBSTD + " --G_ch 8 --D_ch 8 --batch_size 32 "
                                          "--G_param none",
                                          {"quickstart": 2400, "table1": 2400, "figure3": 2400}),
    # The paper's section 4.3/4.4 SAGAN on 64x64 ImageNet (launch_SAGAN_res64_ch32_bs128_dstep_1_rr40.sh).
    "imagenet64": ("--dataset I64_hdf5 --shuffle --num_workers 8 --batch_size 128 --num_D_steps 1 "
                   "--G_lr 1e-4 --D_lr 4e-4 --G_attn 32 --D_attn 32 --G_init xavier --D_init xavier "
                   "--G_eval_mode --G_ch 32 --D_ch 32 --ema --use_ema --ema_start 2000 --save_every 1000 "
                   "--test_every 1000000000 --embedding inceptionv3 --feature_net inception_v3 "
                   "--num_inception_images 50000 --num_pr_images 10000",
                   {"quickstart": 200000, "table1": 200000, "figure3": 500000}),
}
