//! Several settings read together (`ClientStore::settings_of`) answer exactly what reading
//! each alone answers, in the order asked, missing ones as `None`.

mod support;

use support::ClientHarness;

#[tokio::test]
async fn settings_read_together_are_the_settings_read_alone() {
    let h = ClientHarness::new();
    let store = h.open().await;
    store.set_setting("a", "first").await.expect("set a");
    store.set_setting("b", "second").await.expect("set b");
    store.set_setting("empty", "").await.expect("set empty");
    let keys = ["b", "missing", "a", "empty", "a"];
    let together = store.settings_of(&keys).await.expect("together");
    let mut alone = Vec::new();
    for k in keys {
        alone.push(store.setting(k).await.expect("alone"));
    }
    assert_eq!(together, alone);
    assert_eq!(
        together,
        [
            Some("second".to_owned()),
            None,
            Some("first".to_owned()),
            Some(String::new()),
            Some("first".to_owned()),
        ]
    );
    assert!(store.settings_of(&[]).await.expect("none").is_empty());
    // A change is seen by the next read.
    store.set_setting("a", "changed").await.expect("change a");
    assert_eq!(
        store.settings_of(&["a"]).await.expect("again"),
        [Some("changed".to_owned())]
    );
}
