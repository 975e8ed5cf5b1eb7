#!/usr/bin/env bash
# 128x128 ImageNet: HDF5 + Inception moments + real manifold (see prepare_data_imagenet.sh).
exec bash "$(dirname "$0")/prepare_data_imagenet.sh" 128 "$@"
