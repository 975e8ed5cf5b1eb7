#!/bin/bash
# BigGAN-PyTorch's SN-GAN setting at 128x128 (5 D steps, no attention).
source "$(dirname "$0")/utils/launch.sh"
launch train.py \
--which_train_fn GAN \
--dataset I128_hdf5 --parallel --shuffle  --num_workers 8 --batch_size 64 \
--num_G_accumulations 1 --num_D_accumulations 1 \
--num_D_steps 5 --G_lr 2e-4 --D_lr 2e-4 --D_B2 0.900 --G_B2 0.900 \
--G_attn 0 --D_attn 0 \
--G_ortho 0.0 \
--G_init xavier --D_init xavier \
--ema --use_ema --ema_start 2000 --G_eval_mode \
--test_every 2000 --save_every 1000 --num_best_copies 5 --num_save_copies 2 --seed 0 \
--name_suffix SNGAN \
"$@"
