//! The `image` input step: PNG or JPEG bytes to a normalized float tensor.
//!
//! The size limit is checked on the dimensions in the image header before
//! any pixel is decoded, and the decoder runs under the same limits, so a
//! small file that claims 10,000 x 10,000 pixels costs a header read, not
//! 300 MB of memory.

use std::io::Cursor;

use image::imageops::FilterType;
use image::{DynamicImage, ImageFormat, ImageReader, Limits};

use super::{ProcessError, spec_error};
use crate::crd::processing::{ColorMode, Crop, ImageInput, Layout, ResizeFilter};
use crate::engine::{DataType, Dim, TensorSpec};

/// Largest width or height accepted when the spec sets none: enough for
/// any camera photo a classifier resizes anyway.
pub const DEFAULT_MAX_DIMENSION: u32 = 4096;

/// Bytes the decoder may allocate per image, beyond the pixels: the `image`
/// crate's own default, kept explicit so the bound is visible here.
const MAX_DECODER_ALLOC: u64 = 512 * 1024 * 1024;

/// Why an image cannot be used: the client's mistake, which the caller
/// reports as a [`ProcessError::Input`] (a 400).
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot read the image: {0}")]
    Read(#[source] std::io::Error),
    #[error("{0:?} images are not accepted; send PNG or JPEG")]
    Format(ImageFormat),
    #[error("not a PNG or JPEG image")]
    UnknownFormat,
    #[error("cannot read the image header: {0}")]
    Header(#[source] image::ImageError),
    #[error("the image is {width}x{height} pixels; this model accepts at most {max} on a side")]
    TooLarge { width: u32, height: u32, max: u32 },
    #[error("cannot decode the image: {0}")]
    Decode(#[source] image::ImageError),
}

/// An image step checked against its model input.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageStep {
    color: ColorMode,
    layout: Layout,
    width: u32,
    height: u32,
    filter: ResizeFilter,
    crop: Crop,
    scale: f32,
    /// One per channel.
    mean: Vec<f32>,
    /// One per channel, none zero.
    std: Vec<f32>,
    max_dimension: u32,
    /// The model input's shape for one instance (without a batch axis).
    instance_shape: Vec<usize>,
}

impl ImageStep {
    /// Checks the image settings against the model input (rank 4, 1 or 3
    /// channels on the layout's channel axis, sizes the spec can produce).
    /// What needs no model (finite numbers, no zero `std`) is
    /// [`ImageInput::check`]'s, which the caller ran.
    ///
    /// # Errors
    /// [`ProcessError::Spec`] naming the field under `field`.
    pub fn new(
        spec: &ImageInput,
        model: &TensorSpec,
        field: &str,
    ) -> Result<ImageStep, ProcessError> {
        let err = |sub: &str, reason: String| {
            spec_error(
                if sub.is_empty() { field.to_string() } else { format!("{field}.{sub}") },
                reason,
            )
        };
        if !matches!(model.datatype, DataType::F32 | DataType::F64 | DataType::F16) {
            return Err(err(
                "",
                format!(
                    "model input {:?} is {}; images become floating-point inputs",
                    model.name, model.datatype
                ),
            ));
        }
        if model.shape.len() != 4 {
            return Err(err(
                "",
                format!(
                    "model input {:?} has rank {}; an image input needs rank 4 (NCHW or NHWC)",
                    model.name,
                    model.shape.len()
                ),
            ));
        }
        let batched = match &model.shape[0] {
            Dim::Batch => true,
            Dim::Fixed(1) => false,
            other => {
                return Err(err(
                    "",
                    format!(
                        "model input {:?} axis 0 is {other:?}; expected a batch axis or 1",
                        model.name
                    ),
                ));
            }
        };
        let layout = spec.layout.unwrap_or(Layout::Nchw);
        let (c_axis, h_axis, w_axis) = match layout {
            Layout::Nchw => (1, 2, 3),
            Layout::Nhwc => (3, 1, 2),
        };
        let channels = match &model.shape[c_axis] {
            Dim::Fixed(c @ (1 | 3)) => *c,
            other => {
                return Err(err(
                    "layout",
                    format!(
                        "model input {:?} has {other:?} on the channel axis {c_axis} of {layout:?}; expected 1 or 3",
                        model.name
                    ),
                ));
            }
        };
        let color = match (spec.color, channels) {
            (None, 1) | (Some(ColorMode::Grayscale), 1) => ColorMode::Grayscale,
            (None, _) | (Some(ColorMode::Rgb), 3) => ColorMode::Rgb,
            (Some(color), c) => {
                return Err(err(
                    "color",
                    format!("{color:?} gives {} channels, the model input has {c}", 4 - c),
                ));
            }
        };
        let size = |sub: &str, given: Option<u32>, axis: usize| -> Result<u32, ProcessError> {
            match (&model.shape[axis], given) {
                (Dim::Fixed(n), None) => u32::try_from(*n)
                    .map_err(|_| err(sub, format!("the model's size {n} is too large"))),
                (Dim::Fixed(n), Some(g)) if *n == g as usize => Ok(g),
                (Dim::Fixed(n), Some(g)) => Err(err(
                    sub,
                    format!(
                        "{g} cannot produce model input {:?}, whose axis {axis} is {n}",
                        model.name
                    ),
                )),
                (_, Some(0)) => Err(err(sub, "must be at least 1".into())),
                (_, Some(g)) => Ok(g),
                (_, None) => Err(err(
                    sub,
                    format!(
                        "model input {:?} has a variable axis {axis}; set the size",
                        model.name
                    ),
                )),
            }
        };
        let width = size("width", spec.width, w_axis)?;
        let height = size("height", spec.height, h_axis)?;
        let scale = spec.scale.unwrap_or(1.0);
        let per_channel = |sub: &str,
                           given: &Option<Vec<f64>>,
                           default: f64|
         -> Result<Vec<f32>, ProcessError> {
            let values = match given.as_deref() {
                None => vec![default; channels],
                Some([one]) => vec![*one; channels],
                Some(v) if v.len() == channels => v.to_vec(),
                Some(v) => {
                    return Err(err(
                        sub,
                        format!("has {} values; give 1 or {channels} (one per channel)", v.len()),
                    ));
                }
            };
            Ok(values.into_iter().map(|v| v as f32).collect())
        };
        let mean = per_channel("mean", &spec.mean, 0.0)?;
        let std = per_channel("std", &spec.std, 1.0)?;
        let max_dimension = spec.max_dimension.unwrap_or(DEFAULT_MAX_DIMENSION);
        let (w, h, c) = (width as usize, height as usize, channels);
        let mut instance_shape = match layout {
            Layout::Nchw => vec![c, h, w],
            Layout::Nhwc => vec![h, w, c],
        };
        if !batched {
            instance_shape.insert(0, 1);
        }
        Ok(ImageStep {
            color,
            layout,
            width,
            height,
            filter: spec.resize.unwrap_or(ResizeFilter::Bilinear),
            crop: spec.crop.unwrap_or(Crop::None),
            scale: scale as f32,
            mean,
            std,
            max_dimension,
            instance_shape,
        })
    }

    /// The shape of one instance's tensor (without the batch axis when the
    /// model has one).
    pub fn instance_shape(&self) -> Vec<usize> {
        self.instance_shape.clone()
    }

    /// Elements per instance.
    pub fn row_len(&self) -> usize {
        self.width as usize * self.height as usize * self.channels()
    }

    fn channels(&self) -> usize {
        match self.color {
            ColorMode::Grayscale => 1,
            ColorMode::Rgb => 3,
        }
    }

    /// Decodes, converts, resizes and normalizes one encoded image.
    ///
    /// # Errors
    /// A message fit for a 400: not PNG or JPEG, over the size limit,
    /// corrupt data.
    pub fn process(&self, bytes: &[u8]) -> Result<Vec<f32>, ImageError> {
        let image = self.decode(bytes)?;
        Ok(self.tensor(image))
    }

    /// Decodes under the size limit, read from the header first.
    fn decode(&self, bytes: &[u8]) -> Result<DynamicImage, ImageError> {
        let open =
            || ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(ImageError::Read);
        let reader = open()?;
        match reader.format() {
            Some(ImageFormat::Png | ImageFormat::Jpeg) => {}
            Some(other) => return Err(ImageError::Format(other)),
            None => return Err(ImageError::UnknownFormat),
        }
        // The header alone: no pixel is decoded before the size is known.
        let (width, height) = reader.into_dimensions().map_err(ImageError::Header)?;
        let max = self.max_dimension;
        if width > max || height > max {
            return Err(ImageError::TooLarge { width, height, max });
        }
        let mut limits = Limits::default();
        limits.max_image_width = Some(max);
        limits.max_image_height = Some(max);
        limits.max_alloc = Some(MAX_DECODER_ALLOC);
        let mut reader = open()?;
        reader.limits(limits);
        reader.decode().map_err(ImageError::Decode)
    }

    /// Colour, crop, resize, then scale, normalize and lay out.
    pub fn tensor(&self, image: DynamicImage) -> Vec<f32> {
        let image = self.crop(image);
        let (w, h) = (self.width, self.height);
        let filter = match self.filter {
            ResizeFilter::Nearest => FilterType::Nearest,
            ResizeFilter::Bilinear => FilterType::Triangle,
        };
        let resize = |img: DynamicImage| {
            if img.width() == w && img.height() == h { img } else { img.resize_exact(w, h, filter) }
        };
        let pixels: Vec<u8> = match self.color {
            ColorMode::Grayscale => {
                resize(DynamicImage::ImageLuma8(image.to_luma8())).into_luma8().into_raw()
            }
            ColorMode::Rgb => {
                resize(DynamicImage::ImageRgb8(image.to_rgb8())).into_rgb8().into_raw()
            }
        };
        let c = self.channels();
        let plane = w as usize * h as usize;
        let mut out = vec![0f32; plane * c];
        // Per channel: (p * scale - mean) / std == p * a + b, one multiply-add per pixel.
        let a: Vec<f32> = self.std.iter().map(|s| self.scale / s).collect();
        let b: Vec<f32> = self.mean.iter().zip(&self.std).map(|(m, s)| -m / s).collect();
        for (i, px) in pixels.chunks_exact(c).enumerate() {
            for (ch, p) in px.iter().enumerate() {
                let v = f32::from(*p) * a[ch] + b[ch];
                let at = match self.layout {
                    Layout::Nchw => ch * plane + i,
                    Layout::Nhwc => i * c + ch,
                };
                out[at] = v;
            }
        }
        out
    }

    /// With `crop: center`, the largest centred region with the target's
    /// aspect ratio, so the resize keeps proportions.
    fn crop(&self, image: DynamicImage) -> DynamicImage {
        if self.crop != Crop::Center {
            return image;
        }
        let (iw, ih) = (u64::from(image.width()), u64::from(image.height()));
        let (tw, th) = (u64::from(self.width), u64::from(self.height));
        // Compare iw/ih with tw/th without floats.
        let (cw, ch) = if iw * th > ih * tw {
            ((ih * tw / th).max(1), ih)
        } else {
            (iw, (iw * th / tw).max(1))
        };
        if (cw, ch) == (iw, ih) {
            return image;
        }
        let (x, y) = ((iw - cw) / 2, (ih - ch) / 2);
        // The values fit in u32: they are at most the image's own dimensions.
        image.crop_imm(x as u32, y as u32, cw as u32, ch as u32)
    }
}

#[cfg(test)]
mod tests {
    use image::{GrayImage, Luma, Rgb, RgbImage};

    use super::*;

    fn model(shape: Vec<Dim>) -> TensorSpec {
        TensorSpec { name: "image".into(), datatype: DataType::F32, shape }
    }

    fn nchw(c: usize, h: usize, w: usize) -> TensorSpec {
        model(vec![Dim::Batch, Dim::Fixed(c), Dim::Fixed(h), Dim::Fixed(w)])
    }

    fn png(image: DynamicImage) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        image.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn a_2x2_rgb_image_is_normalized_per_channel_in_nchw_and_nhwc() {
        // Pixels (row-major): red, green / blue, white.
        let img = RgbImage::from_fn(2, 2, |x, y| match (x, y) {
            (0, 0) => Rgb([255, 0, 0]),
            (1, 0) => Rgb([0, 255, 0]),
            (0, 1) => Rgb([0, 0, 255]),
            _ => Rgb([255, 255, 255]),
        });
        let spec = ImageInput {
            scale: Some(1.0 / 255.0),
            mean: Some(vec![0.5, 0.25, 0.0]),
            std: Some(vec![0.5, 0.25, 2.0]),
            ..ImageInput::default()
        };
        let step = ImageStep::new(&spec, &nchw(3, 2, 2), "inputs[0].image").unwrap();
        let got = step.process(&png(DynamicImage::ImageRgb8(img.clone()))).unwrap();
        // R: (1-0.5)/0.5 = 1, (0-0.5)/0.5 = -1; G: (1-0.25)/0.25 = 3, -1; B: 0.5, 0.
        let want = [1.0, -1.0, -1.0, 1.0, -1.0, 3.0, -1.0, 3.0, 0.0, 0.0, 0.5, 0.5];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{got:?}");
        }
        assert_eq!(got.len(), 12);
        let nhwc = model(vec![Dim::Batch, Dim::Fixed(2), Dim::Fixed(2), Dim::Fixed(3)]);
        let spec = ImageInput { layout: Some(Layout::Nhwc), ..spec };
        let step = ImageStep::new(&spec, &nhwc, "inputs[0].image").unwrap();
        let got = step.process(&png(DynamicImage::ImageRgb8(img))).unwrap();
        let want = [1.0, -1.0, 0.0, -1.0, 3.0, 0.0, -1.0, -1.0, 0.5, 1.0, 3.0, 0.5];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{got:?}");
        }
    }

    #[test]
    fn rgb_becomes_grayscale_with_the_luma_weights() {
        // image's luma: 0.2126 R + 0.7152 G + 0.0722 B.
        let img = RgbImage::from_pixel(1, 1, Rgb([100, 200, 50]));
        let step = ImageStep::new(&ImageInput::default(), &nchw(1, 1, 1), "i").unwrap();
        let got = step.process(&png(DynamicImage::ImageRgb8(img))).unwrap();
        let luma = (0.2126f32 * 100.0 + 0.7152 * 200.0 + 0.0722 * 50.0).round();
        assert!((got[0] - luma).abs() <= 1.0, "{got:?} vs {luma}");
    }

    #[test]
    fn nearest_resize_repeats_pixels_and_center_crop_keeps_the_middle() {
        let img = GrayImage::from_raw(2, 2, vec![10, 20, 30, 40]).unwrap();
        let spec = ImageInput { resize: Some(ResizeFilter::Nearest), ..ImageInput::default() };
        let step = ImageStep::new(&spec, &nchw(1, 4, 4), "i").unwrap();
        let got = step.process(&png(DynamicImage::ImageLuma8(img))).unwrap();
        assert_eq!(
            got,
            [10., 10., 20., 20., 10., 10., 20., 20., 30., 30., 40., 40., 30., 30., 40., 40.]
        );
        // 4x2 (wide) into 2x2 with crop center: columns 1 and 2 survive.
        let img = GrayImage::from_raw(4, 2, vec![1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        let spec = ImageInput { crop: Some(Crop::Center), ..ImageInput::default() };
        let step = ImageStep::new(&spec, &nchw(1, 2, 2), "i").unwrap();
        let got = step.process(&png(DynamicImage::ImageLuma8(img))).unwrap();
        assert_eq!(got, [2., 3., 6., 7.]);
    }

    #[test]
    fn specs_that_cannot_fit_the_model_name_the_field() {
        let cases: Vec<(ImageInput, TensorSpec, &str)> = vec![
            (
                ImageInput { width: Some(10), ..Default::default() },
                nchw(1, 8, 8),
                "inputs[0].image.width",
            ),
            (
                ImageInput { color: Some(ColorMode::Rgb), ..Default::default() },
                nchw(1, 8, 8),
                "inputs[0].image.color",
            ),
            (
                ImageInput { mean: Some(vec![0.1, 0.2]), ..Default::default() },
                nchw(3, 8, 8),
                "inputs[0].image.mean",
            ),
            (
                ImageInput { std: Some(vec![0.0]), ..Default::default() },
                nchw(1, 8, 8),
                "inputs[0].image.std",
            ),
            (ImageInput::default(), model(vec![Dim::Batch, Dim::Fixed(64)]), "inputs[0].image"),
            (
                ImageInput::default(),
                model(vec![Dim::Batch, Dim::Fixed(3), Dim::Dynamic("h".into()), Dim::Fixed(4)]),
                "inputs[0].image.height",
            ),
            (
                ImageInput { layout: Some(Layout::Nhwc), ..Default::default() },
                nchw(3, 8, 8),
                "inputs[0].image.layout",
            ),
        ];
        for (spec, model, field) in cases {
            let step = spec
                .check("inputs[0].image")
                .map_err(ProcessError::from)
                .and_then(|()| ImageStep::new(&spec, &model, "inputs[0].image"));
            match step {
                Err(ProcessError::Spec { field: f, reason }) => assert_eq!(f, field, "{reason}"),
                other => panic!("{spec:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn bad_images_are_refused_with_a_reason() {
        let step = ImageStep::new(&ImageInput::default(), &nchw(1, 8, 8), "i").unwrap();
        let mut good = png(DynamicImage::ImageLuma8(GrayImage::from_pixel(8, 8, Luma([7]))));
        assert_eq!(step.process(&good).unwrap(), vec![7.0; 64]);
        assert!(step.process(b"hello").unwrap_err().to_string().contains("not a PNG or JPEG"));
        good.truncate(good.len() - 20);
        let err = step.process(&good).unwrap_err().to_string();
        assert!(err.contains("cannot decode"), "{err}");
        let spec = ImageInput { max_dimension: Some(4), ..Default::default() };
        let step = ImageStep::new(&spec, &nchw(1, 8, 8), "i").unwrap();
        let big = png(DynamicImage::ImageLuma8(GrayImage::new(5, 3)));
        let err = step.process(&big).unwrap_err().to_string();
        assert!(err.contains("5x3") && err.contains("at most 4"), "{err}");
    }
}
