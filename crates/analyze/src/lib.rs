//! Cross-resource checks (`trellis analyze`) reporting Istio's message codes.
