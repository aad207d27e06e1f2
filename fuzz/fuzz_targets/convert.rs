//! Frame conversion on arbitrary camera frames: YUYV, GREY, RGB3 and MJPG with any size,
//! stride, range and output channel count, then a crop with any ROI. An error or a filled
//! buffer, never a panic or an out-of-bounds access.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_appliance::capture::convert::{convert, crop, RawLayout};
use vigil_appliance::config::{PixelFormat, Roi};

fuzz_target!(|data: &[u8]| {
    if data.len() < 12 {
        return;
    }
    let (h, raw) = data.split_at(12);
    let format = PixelFormat::ALL[usize::from(h[0]) % 4];
    // Sizes small enough to allocate the output; strides anything a driver could report.
    let width = usize::from(h[1] % 80);
    let height = usize::from(h[2] % 80);
    let stride = u32::from_le_bytes([h[3], h[4], h[5], h[6]]) as usize;
    let stride = if h[7] & 1 == 0 { stride % 512 } else { stride };
    let channels = [1, 3, 0, 2][usize::from(h[7] >> 1) % 4];
    let layout = RawLayout {
        format,
        width,
        height,
        stride,
        limited_range: h[8] & 1 == 1,
    };
    let mut out = vec![0u8; width * height * channels.max(1)];
    if convert(raw, &layout, channels, &mut out).is_err() {
        return;
    }
    let roi = Roi {
        x: usize::from(h[9] % 96),
        y: usize::from(h[10] % 96),
        w: usize::from(h[11] % 96),
        h: usize::from(h[11] / 3 % 96),
    };
    let mut cropped = vec![0u8; roi.w * roi.h * channels];
    let _ = crop(&out, width, height, channels, &roi, &mut cropped);
});
