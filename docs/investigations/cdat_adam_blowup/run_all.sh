#!/bin/bash
# Runs every (problem, method) of evaluate.py; results in results/*.json, log in run_all.log.
set -e
cd "$(dirname "$0")"
python evaluate.py relu_ce_adam constant check_k1_fb check_k0 check_k0.5 check_k2 rel0.1 rel0.3 sigma1 warmup cap1e-2 ema0.99 check_k1_ema0
python evaluate.py relu_ce_sgd
python evaluate.py tanh_sq_adam
python evaluate.py tanh_sq_sgd
# constants re-run with the widened grid (k = -4..8; the first runs used k = -4..5 and the
# best Adam lr sat on the grid's edge)
python evaluate.py relu_ce_adam constant
python evaluate.py relu_ce_sgd constant
python evaluate.py tanh_sq_sgd constant
