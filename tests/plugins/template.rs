//! The `template` plugin (wasm-plugins/template, the one plugin authors copy) through the host:
//! what its README and doc comment promise (tests/plugins.rs has the harness).

use super::*;

const CONFIG: &str = r#"{"header": "x-flowdog-template", "value": "hello", "deny_path": "/blocked"}"#;

fn log_lines(events: &Receiver<Event>) -> Vec<String> {
    events
        .try_iter()
        .filter_map(|e| match e {
            Event::Log { message, .. } => Some(message),
            Event::Failed { what, .. } => panic!("the plugin failed: {what}"),
            _ => None,
        })
        .collect()
}

/// One exchange through `c`: the request head out, then (when it went on) a `200` response head
/// back. The request as it left, or the local response; and the response as it left.
fn exchange(c: &Chain, path: &'static str) -> (Result<http::request::Parts, Stop>, Option<http::response::Parts>) {
    let ex = Rc::new(Exchange::new(&c.vms, flow(), 1 << 20));
    block_on(async move {
        let req = match ex.head(request(path, &[("Host", "www.lab.test")]), true).await {
            Ok(r) => r.expect("the head is not held"),
            Err(stop) => return (Err(stop), None),
        };
        ex.request_sent(&req);
        let resp = ex.head(response(200, &[("Content-Type", "text/html")]), true).await.unwrap().unwrap();
        (Ok(req), Some(resp))
    })
}

#[test]
fn template_adds_its_request_header_and_the_vpc_endpoint_as_a_response_header() {
    let c = chain(&[("template", CONFIG, OnFailure::Closed)], relaxed());
    let (req, resp) = exchange(&c, "/index.html?x=1");
    let req = req.expect("the request goes on");
    assert_eq!(req.uri.path(), "/index.html");
    assert_eq!(req.headers.get_all("x-flowdog-template").iter().collect::<Vec<_>>(), vec!["hello"]);
    let resp = resp.unwrap();
    assert_eq!(resp.status.as_u16(), 200);
    // flow() has vpc_endpoint_id 0x0123456789abcdef: `vpce-` and 17 hex digits.
    assert_eq!(resp.headers["x-flowdog-vpce"], "vpce-00123456789abcdef");
    assert_eq!(resp.headers["content-type"], "text/html");
    let logs = log_lines(&c.events);
    assert!(logs.iter().any(|l| l == "template: adding x-flowdog-template: hello; denying /blocked"), "{logs:?}");
}

#[test]
fn template_answers_403_itself_for_the_deny_path() {
    let c = chain(&[("template", CONFIG, OnFailure::Closed)], relaxed());
    let (denied, resp) = exchange(&c, "/blocked?who=me");
    let Err(Stop::Local(r)) = denied else { panic!("a local response, got {denied:?}") };
    assert!(resp.is_none(), "the server is never asked");
    assert_eq!((r.status.as_u16(), &r.body[..]), (403, &b"denied by template\n"[..]));
    assert_eq!(r.headers["content-type"], "text/plain");
    // Only that path: below it, the request goes on with the header.
    let (other, _) = exchange(&c, "/blocked/not");
    assert_eq!(other.unwrap().headers["x-flowdog-template"], "hello");
    let logs = log_lines(&c.events);
    assert!(logs.iter().any(|l| l == "template: /blocked?who=me denied"), "{logs:?}");
}

#[test]
fn template_takes_the_defaults_or_a_toml_table_as_its_configuration() {
    // No configuration: the defaults, no path denied.
    let c = chain(&[("template", "", OnFailure::Closed)], relaxed());
    let (req, resp) = exchange(&c, "/blocked");
    assert_eq!(req.unwrap().headers["x-flowdog-template"], "hello");
    assert_eq!(resp.unwrap().headers["x-flowdog-vpce"], "vpce-00123456789abcdef");

    // A TOML table in the [[plugin]] entry reaches the plugin as JSON.
    let entry: PluginEntry = toml::from_str(&format!(
        "name = \"template\"\nfile = \"{}\"\n\
         configuration = {{ header = \"x-team\", value = \"blue\", response_header = \"x-endpoint\" }}",
        wasm("template").display()
    ))
    .unwrap();
    let (tx, events) = test_events();
    let (plugins, _) = Plugins::load(&relaxed(), &[entry], 1, tx).expect("the table is taken");
    let c = Chain { vms: plugins.instantiate(0, true).unwrap(), events, _plugins: plugins };
    let (req, resp) = exchange(&c, "/");
    let req = req.unwrap();
    assert_eq!(req.headers["x-team"], "blue");
    assert!(!req.headers.contains_key("x-flowdog-template"));
    let resp = resp.unwrap();
    assert_eq!(resp.headers["x-endpoint"], "vpce-00123456789abcdef");
    assert!(!resp.headers.contains_key("x-flowdog-vpce"));
}

#[test]
fn template_refuses_a_bad_configuration_at_load() {
    for (cfg, why) in [
        ("not json", "template: bad configuration: expected ident at line 1 column 2"),
        (r#"{"header": "x-a", "colour": "red"}"#, "template: bad configuration: unknown field `colour`"),
        (r#"{"header": "X Bad"}"#, "template: bad configuration: \"X Bad\" is not a lowercase header name"),
        (r#"{"deny_path": "blocked"}"#, "template: bad configuration: deny_path \"blocked\" does not start with /"),
    ] {
        let mut e: PluginEntry =
            toml::from_str(&format!("name = \"template\"\nfile = \"{}\"", wasm("template").display())).unwrap();
        e.configuration = Some(flowdog::plugin::Configuration::Text(cfg.into()));
        let (tx, events) = test_events();
        let err = match Plugins::load(&relaxed(), &[e], 1, tx) {
            Ok(_) => panic!("{cfg:?} was taken"),
            Err(err) => format!("{err:#}"),
        };
        assert!(err.contains("plugin template ("), "the error names the plugin: {err}");
        assert!(err.contains("on_configure refused the plugin's configuration (returned false)"), "{err}");
        let logs = log_lines(&events);
        assert!(logs.iter().any(|l| l.starts_with(why)), "{cfg:?}: {logs:?}");
    }
}
