//! Fast CPU kernels for GRU and LSTM inference (work in progress: the kernels land in later
//! changes; see the workspace README).
