//! Decoded pixels → model input, through `vigil_shared::preprocess`: the loaders have no
//! resizing of their own, so training, `vigil eval`, threshold calibration and vigild all see
//! the same pixels for the same picture (see that module for the order of the steps).

use vigil_shared::manifest::InputSpec;
use vigil_shared::preprocess::{self, PreprocessError};

/// The value range of every model input the host builds (`input.range` in the manifest).
pub const MODEL_RANGE: [f32; 2] = [-1.0, 1.0];

/// The square model input of side `size` with `channels` channels.
pub fn model_spec(size: usize, channels: usize) -> InputSpec {
    InputSpec {
        channels,
        height: size,
        width: size,
        range: MODEL_RANGE,
    }
}

/// 8-bit interleaved pixels (`channels_in` 1 or 3, `width`×`height`) to a model input of
/// `size`×`size`×`channels_out`, CHW planar in [-1, 1]: `vigil_shared::preprocess`'s
/// conversion, resize and scaling, exactly as vigild runs them on a frame of that size.
pub fn to_model_input(
    pixels: &[u8],
    width: usize,
    height: usize,
    channels_in: usize,
    size: usize,
    channels_out: usize,
) -> Result<Vec<f32>, PreprocessError> {
    preprocess::image_to_model_input(
        pixels,
        channels_in,
        height,
        width,
        &model_spec(size, channels_out),
    )
}

/// A grey 8-bit mask (`width`×`height`) at `size`×`size`, by `vigil_shared::preprocess`'s
/// nearest-neighbour resize (a mask must never gain in-between values), thresholded at > 127.
pub fn mask_from_u8(
    mask: &[u8],
    width: usize,
    height: usize,
    size: usize,
) -> Result<Vec<bool>, PreprocessError> {
    let mut out = vec![0u8; size * size];
    preprocess::try_resize_nearest(mask, 1, height, width, &mut out, size, size)?;
    Ok(out.into_iter().map(|m| m > 127).collect())
}
