//! MicroDrop 3's `three-object` payload: a JSON array of electrodes
//! `{"id", "channel", "translation": {x, y}, "shape": <three.js Shape JSON>, "area"}`.
//!
//! Coordinates: `translation` is the electrode's centre in the device SVG's frame (mm, y grows
//! downwards), while the shape's points are relative to it with y pointing UP (three.js), so a
//! shape point `(sx, sy)` lies at `(tx + sx, ty - sy)` on the drawing (checked to 1e-15 mm
//! against the SVG of the default device). The `area` field is not the shape's area and is
//! ignored; areas are computed from the outline.
//!
//! Curves: the default device has only straight segments (`v1` to `v2`, often without a
//! `type`). Quadratic and cubic Béziers, splines and ellipse arcs are flattened to points; an
//! unknown curve type is reduced to its end points when it has `v1`/`v2`, else rejected.

use nalgebra::Point2;
use serde_json::{json, Map, Value};

use super::{geometry, DeviceError, Electrode};

/// Segments per Bézier or arc when flattening curves.
const CURVE_SEGMENTS: usize = 16;

/// Parses a `three-object` payload into electrodes, in payload order.
pub fn parse_electrodes(value: &Value) -> Result<Vec<Electrode>, DeviceError> {
    let items = value.as_array().ok_or(DeviceError::NotAnArray {
        found: json_kind(value),
    })?;
    items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let id = item.get("id").and_then(Value::as_str).map(str::to_string);
            parse_electrode(item).map_err(|problem| DeviceError::Electrode {
                index,
                id: id.unwrap_or_else(|| "<no id>".to_string()),
                problem,
            })
        })
        .collect()
}

/// Builds a `three-object` payload from electrodes (the inverse of [`parse_electrodes`]):
/// straight segments with `"type": "LineCurve"`, translation at the bounding-box centre,
/// `area` set to the computed area in mm².
pub fn to_value(electrodes: &[Electrode]) -> Value {
    let items = electrodes.iter().map(|e| {
        let center = geometry::bounding_box(&e.outline)
            .map(|b| b.center())
            .unwrap_or(e.centroid);
        let local = |p: &Point2<f64>| json!({"x": p.x - center.x, "y": center.y - p.y});
        let curves: Vec<Value> = geometry::edges(&e.outline)
            .map(|(a, b)| json!({"type": "LineCurve", "v1": local(&a), "v2": local(&b)}))
            .collect();
        let channels: Vec<String> = e.channels.iter().map(u16::to_string).collect();
        json!({
            "id": e.id,
            "channel": channels.join(","),
            "translation": {"x": center.x, "y": center.y},
            "shape": {"curves": curves, "autoClose": true, "holes": []},
            "area": e.area_mm2,
        })
    });
    Value::Array(items.collect())
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// One electrode; the error is a sentence saying what is wrong with it.
fn parse_electrode(item: &Value) -> Result<Electrode, String> {
    let obj = item
        .as_object()
        .ok_or_else(|| format!("expected an object, got {}", json_kind(item)))?;
    let id = match obj.get("id") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(Value::String(_)) => return Err("`id` is empty".into()),
        Some(other) => return Err(format!("`id` must be a string, got {}", json_kind(other))),
        None => return Err("missing `id`".into()),
    };
    let channels = parse_channels(obj.get("channel"))?;
    let translation = match obj.get("translation") {
        Some(t) => point(t).map_err(|e| format!("`translation`: {e}"))?,
        None => return Err("missing `translation`".into()),
    };
    let shape = obj
        .get("shape")
        .and_then(Value::as_object)
        .ok_or("missing `shape` object")?;
    let curves = shape
        .get("curves")
        .and_then(Value::as_array)
        .ok_or("`shape` has no `curves` array")?;
    let mut local = Vec::new();
    for (i, curve) in curves.iter().enumerate() {
        flatten_curve(curve, &mut local).map_err(|e| format!("shape curve #{i}: {e}"))?;
    }
    let outline = local
        .iter()
        .map(|p| Point2::new(translation.x + p.x, translation.y - p.y))
        .collect();
    Electrode::new(id, channels, outline).map_err(|e| match e {
        DeviceError::Outline { problem, .. } => problem,
        other => other.to_string(),
    })
}

/// `"119"`, `"1,2"`, `""`, missing or null; a bare number is accepted too.
fn parse_channels(value: Option<&Value>) -> Result<Vec<u16>, String> {
    let text = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => {
            return Err(format!(
                "`channel` must be a string like \"3\" or \"3,4\", got {}",
                json_kind(other)
            ))
        }
    };
    let mut channels = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let ch = part.parse::<u16>().map_err(|_| {
            format!("channel {part:?} in `channel` {text:?} is not a channel number")
        })?;
        if !channels.contains(&ch) {
            channels.push(ch);
        }
    }
    Ok(channels)
}

/// `{"x": number, "y": number}` with finite numbers.
fn point(value: &Value) -> Result<Point2<f64>, String> {
    let coord = |name: &str| -> Result<f64, String> {
        let v = value.get(name).ok_or_else(|| format!("missing `{name}`"))?;
        let n = v
            .as_f64()
            .ok_or_else(|| format!("`{name}` must be a number, got {}", json_kind(v)))?;
        if n.is_finite() {
            Ok(n)
        } else {
            Err(format!("`{name}` is not finite"))
        }
    };
    if !value.is_object() {
        return Err(format!("expected {{x, y}}, got {}", json_kind(value)));
    }
    Ok(Point2::new(coord("x")?, coord("y")?))
}

fn named_point(curve: &Map<String, Value>, name: &str) -> Result<Point2<f64>, String> {
    let v = curve.get(name).ok_or_else(|| format!("missing `{name}`"))?;
    point(v).map_err(|e| format!("`{name}`: {e}"))
}

/// Appends the curve's points (start to end) to `out`.
fn flatten_curve(curve: &Value, out: &mut Vec<Point2<f64>>) -> Result<(), String> {
    let c = curve
        .as_object()
        .ok_or_else(|| format!("expected an object, got {}", json_kind(curve)))?;
    let kind = c.get("type").and_then(Value::as_str).unwrap_or("LineCurve");
    match kind {
        "LineCurve" | "LineCurve3" => {
            out.push(named_point(c, "v1")?);
            out.push(named_point(c, "v2")?);
        }
        "QuadraticBezierCurve" => {
            let [p0, p1, p2] = [
                named_point(c, "v0")?,
                named_point(c, "v1")?,
                named_point(c, "v2")?,
            ];
            sample(out, |t| {
                let s = 1.0 - t;
                Point2::from(p0.coords * (s * s) + p1.coords * (2.0 * s * t) + p2.coords * (t * t))
            });
        }
        "CubicBezierCurve" => {
            let [p0, p1, p2, p3] = [
                named_point(c, "v0")?,
                named_point(c, "v1")?,
                named_point(c, "v2")?,
                named_point(c, "v3")?,
            ];
            sample(out, |t| {
                let s = 1.0 - t;
                Point2::from(
                    p0.coords * (s * s * s)
                        + p1.coords * (3.0 * s * s * t)
                        + p2.coords * (3.0 * s * t * t)
                        + p3.coords * (t * t * t),
                )
            });
        }
        "SplineCurve" => {
            let points = c
                .get("points")
                .and_then(Value::as_array)
                .ok_or("SplineCurve without a `points` array")?;
            for (i, p) in points.iter().enumerate() {
                out.push(point(p).map_err(|e| format!("`points[{i}]`: {e}"))?);
            }
        }
        "EllipseCurve" | "ArcCurve" => flatten_ellipse(c, out)?,
        other => {
            // Unknown kind: keep its end points if it has them (a chord is better than nothing).
            let (a, b) = (named_point(c, "v1"), named_point(c, "v2"));
            match (a, b) {
                (Ok(a), Ok(b)) => out.extend([a, b]),
                _ => return Err(format!("unsupported curve type {other:?} without v1/v2")),
            }
        }
    }
    Ok(())
}

fn sample(out: &mut Vec<Point2<f64>>, at: impl Fn(f64) -> Point2<f64>) {
    out.extend((0..=CURVE_SEGMENTS).map(|i| at(i as f64 / CURVE_SEGMENTS as f64)));
}

fn flatten_ellipse(c: &Map<String, Value>, out: &mut Vec<Point2<f64>>) -> Result<(), String> {
    let num = |name: &str, default: Option<f64>| -> Result<f64, String> {
        match c.get(name).map(Value::as_f64) {
            Some(Some(v)) if v.is_finite() => Ok(v),
            Some(_) => Err(format!("`{name}` must be a finite number")),
            None => default.ok_or_else(|| format!("missing `{name}`")),
        }
    };
    let (cx, cy) = (num("aX", None)?, num("aY", None)?);
    let (rx, ry) = (num("xRadius", None)?, num("yRadius", None)?);
    let (start, mut end) = (num("aStartAngle", None)?, num("aEndAngle", None)?);
    let rotation = num("aRotation", Some(0.0))?;
    let clockwise = c
        .get("aClockwise")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let tau = std::f64::consts::TAU;
    // Same sweep rule as three.js: counter-clockwise unless aClockwise.
    let mut sweep = end - start;
    if clockwise && sweep > 0.0 {
        sweep -= tau * (sweep / tau).ceil();
    } else if !clockwise && sweep < 0.0 {
        sweep += tau * (-sweep / tau).ceil();
    }
    end = start + sweep;
    let (sin_r, cos_r) = rotation.sin_cos();
    sample(out, |t| {
        let a = start + (end - start) * t;
        let (x, y) = (rx * a.cos(), ry * a.sin());
        Point2::new(cx + x * cos_r - y * sin_r, cy + x * sin_r + y * cos_r)
    });
    Ok(())
}
