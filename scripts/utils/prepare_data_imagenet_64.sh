#!/usr/bin/env bash
# 64x64 ImageNet: HDF5 + Inception moments + real manifold (see prepare_data_imagenet.sh).
exec bash "$(dirname "$0")/prepare_data_imagenet.sh" 64 "$@"
