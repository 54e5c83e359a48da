//! Cairn's decision logic: monitors, lifecycle, placement; pure functions over the model and observations
