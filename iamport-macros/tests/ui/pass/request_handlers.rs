use std::convert::Infallible;

use axum::body::Bytes;
use http_body_util::Full;
use iamport_tower::body::Body;
use iamport_tower::{require_certified, Certified};

type Request = axum::http::Request<Body>;
type Response<B> = axum::http::Response<B>;

#[require_certified(min_age = 19)]
async fn hyper_style(req: axum::http::Request<Body>) -> Result<Response<Full<Bytes>>, Infallible> {
    let who = Certified::from_extensions(req.extensions()).map(|c| c.id.clone());
    Ok(Response::new(Full::new(Bytes::from(who.unwrap_or_default()))))
}

#[require_certified(max_birth_year = 1999)]
async fn plain_response(mut req: Request) -> Response<Body> {
    req.extensions_mut().insert(1u8);
    Response::new(Body::empty())
}

struct Service;

impl Service {
    #[require_certified(unique = true)]
    pub async fn handle(&self, request: Request) -> Result<Response<Body>, std::io::Error> {
        let _ = request;
        Ok(Response::new(Body::empty()))
    }
}

fn assert_send<F: std::future::Future + Send>(_: F) {}

fn main() {
    assert_send(hyper_style(Request::new(Body::empty())));
    assert_send(plain_response(Request::new(Body::empty())));
    assert_send(Service.handle(Request::new(Body::empty())));
}
