//! The files under `web/`, compiled into the binary: templates loaded once into a minijinja
//! environment, and static files served with their MIME type.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use minijinja::Environment;
use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "web/templates"]
struct Templates;

#[derive(RustEmbed)]
#[folder = "web/static"]
struct Static;

static ENVIRONMENT: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    // Undefined values are template bugs: fail loudly instead of printing nothing.
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.add_filter("relative", |at: &str| super::times::relative_filter(at));
    env.add_filter("absolute", |at: &str| super::times::absolute_filter(at));
    for name in Templates::iter() {
        let Some(file) = Templates::get(&name) else {
            continue;
        };
        let source = String::from_utf8_lossy(&file.data).into_owned();
        if let Err(e) = env.add_template_owned(name.to_string(), source) {
            // A broken template is a build defect; the page using it fails with this error.
            tracing::error!(template = %name, error = %e, "A UI template does not compile.");
        }
    }
    env
});

/// The templates, parsed once. minijinja auto-escapes every value in `.html` templates.
pub(super) fn templates() -> &'static Environment<'static> {
    &ENVIRONMENT
}

/// `GET /static/{path}`: an embedded file, cacheable for an hour.
pub(super) async fn serve(Path(path): Path<String>) -> Response {
    match Static::get(&path) {
        Some(file) => {
            let mime = file.metadata.mimetype();
            (
                [
                    (
                        header::CONTENT_TYPE,
                        HeaderValue::from_str(mime)
                            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
                    ),
                    (
                        header::CACHE_CONTROL,
                        HeaderValue::from_static("public, max-age=3600"),
                    ),
                ],
                file.data.into_owned(),
            )
                .into_response()
        }
        None => (StatusCode::NOT_FOUND, "no such file").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_compiles() {
        let names: Vec<String> = Templates::iter().map(|n| n.to_string()).collect();
        assert!(names.iter().any(|n| n == "layout.html"), "{names:?}");
        for name in &names {
            templates()
                .get_template(name)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn html_templates_escape_values() {
        let env = templates();
        let out = env
            .render_str("{{ x }}", minijinja::context! { x => "<b>" })
            .expect("renders");
        // render_str has no file name, so it does not escape; the named templates do.
        assert_eq!(out, "<b>");
        let page = env
            .get_template("error.html")
            .expect("error page")
            .render(minijinja::context! { title => "t", status => 400, message => "<script>x</script>" })
            .expect("renders");
        assert!(page.contains("&lt;script&gt;x"), "{page}");
        assert!(!page.contains("<script>x"), "{page}");
    }
}
