//! Paths of any allowed length (up to 4,096 bytes) behave exactly as short ones: the same tree
//! written under a short root and under a root that brings the deepest path to 4,096 bytes
//! answers the same writes, overwrites, conflicts and listings (plain, shallow, reverse, paged).

mod common;

use common::{TestServer, User};
use reqwest::StatusCode;

/// The tree, relative to its root. Names around `/` in byte order (`-` `.` `/` `0`) check that
/// a directory sorts where its files would.
fn tree() -> Vec<String> {
    let long_name = "n".repeat(255);
    let mut files: Vec<String> = [
        "a-", "a.txt", "a/x", "a/y/z", "a/y/z0", "a0", "b/c/d/e", "b/c/f", "b/g", "zz",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    files.push(format!("m/{long_name}/q"));
    files
}

/// A root under which the deepest file of `tree()` is exactly 4,096 bytes long.
fn long_root() -> String {
    let deepest = tree().iter().map(String::len).max().unwrap();
    let mut root = String::from("/pub/");
    while root.len() + 256 + deepest <= 4096 {
        root.push_str(&"r".repeat(255));
        root.push('/');
    }
    let filler = 4096 - deepest - root.len() - 1;
    root.push_str(&"s".repeat(filler));
    root.push('/');
    assert_eq!(root.len() + deepest, 4096);
    root
}

/// A listing of `dir` (under `root`) with `query`, relative to `root`.
async fn list(user: &User, root: &str, dir: &str, query: &str) -> Vec<String> {
    let prefix = format!("pubky://{}{root}", user.z32);
    user.list(&format!("{root}{dir}?{query}"))
        .await
        .into_iter()
        .map(|line| {
            line.strip_prefix(&prefix)
                .unwrap_or_else(|| panic!("{line} is not under {root}"))
                .to_string()
        })
        .collect()
}

/// Every page of a listing, `limit` at a time, following the cursor.
async fn pages(user: &User, root: &str, dir: &str, query: &str, limit: usize) -> Vec<String> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut q = format!("{query}&limit={limit}");
        if let Some(c) = &cursor {
            q.push_str(&format!("&cursor=pubky://{}{root}{c}", user.z32));
        }
        let page = list(user, root, dir, &q).await;
        all.extend(page.iter().cloned());
        if page.len() < limit {
            return all;
        }
        cursor = page.last().cloned();
        assert!(all.len() < 100, "paging does not end");
    }
}

fn expected_deep(dir: &str, reverse: bool) -> Vec<String> {
    let mut files: Vec<String> = tree().into_iter().filter(|f| f.starts_with(dir)).collect();
    files.sort();
    if reverse {
        files.reverse();
    }
    files
}

fn expected_shallow(dir: &str, reverse: bool) -> Vec<String> {
    let mut entries: Vec<String> = tree()
        .into_iter()
        .filter_map(|f| {
            let rest = f.strip_prefix(dir)?;
            Some(match rest.find('/') {
                Some(slash) => format!("{dir}{}", &rest[..=slash]),
                None => f.clone(),
            })
        })
        .collect();
    entries.sort();
    entries.dedup();
    if reverse {
        entries.reverse();
    }
    entries
}

#[tokio::test]
async fn a_4096_byte_tree_answers_as_a_short_one() {
    let hs = TestServer::start().await;
    let alice = hs.signup().await;
    let long = long_root();
    for root in ["/pub/short/", long.as_str()] {
        for file in tree() {
            let path = format!("{root}{file}");
            assert_eq!(
                alice.put(&path, file.clone()).await.status(),
                201,
                "PUT {file}"
            );
        }
        // Overwriting, and a new sibling, in the deepest directory.
        for file in tree() {
            let path = format!("{root}{file}");
            let again = alice.put(&path, format!("{file} again")).await;
            assert_eq!(again.status(), 201, "overwrite {file}");
        }
        let deepest = tree().into_iter().max_by_key(String::len).unwrap();
        let sibling = format!("{root}{}", deepest.replace("/q", "/p"));
        assert_eq!(alice.put(&sibling, "sibling").await.status(), 201);
        assert_eq!(alice.delete(&sibling).await.status(), 204);
        let got = alice.get(&format!("{root}{deepest}")).await;
        assert_eq!(got.text().await.unwrap(), format!("{deepest} again"));

        // A path is a file or a directory, never both.
        for (path, why) in [
            ("a", "a directory"),
            ("b/c", "a directory"),
            ("a.txt/under", "under a file"),
            ("a/y/z/under", "under a file"),
            ("b/g/h/i", "under a file"),
        ] {
            let put = alice.put(&format!("{root}{path}"), "x").await;
            assert_eq!(put.status(), StatusCode::CONFLICT, "{path} is {why}");
        }
    }

    for dir in ["", "a/", "a/y/", "b/", "b/c/", "m/"] {
        for reverse in [false, true] {
            let flag = if reverse {
                "reverse=true"
            } else {
                "reverse=false"
            };
            let deep = list(&alice, "/pub/short/", dir, flag).await;
            assert_eq!(deep, expected_deep(dir, reverse), "deep {dir} {flag}");
            assert_eq!(
                list(&alice, &long, dir, flag).await,
                deep,
                "long deep {dir}"
            );
            for limit in [1, 2, 3] {
                assert_eq!(
                    pages(&alice, &long, dir, flag, limit).await,
                    deep,
                    "paged {dir}"
                );
            }

            let query = format!("shallow=true&{flag}");
            let shallow = list(&alice, "/pub/short/", dir, &query).await;
            assert_eq!(
                shallow,
                expected_shallow(dir, reverse),
                "shallow {dir} {flag}"
            );
            assert_eq!(list(&alice, &long, dir, &query).await, shallow);
            for limit in [1, 2] {
                let paged = pages(&alice, &long, dir, &query, limit).await;
                assert_eq!(paged, shallow, "paged shallow {dir} {flag}");
            }
        }
    }

    // A cursor naming a subdirectory skips what is below it; one deep inside resumes there.
    for root in ["/pub/short/", long.as_str()] {
        let after_dir = format!("cursor={root}a/&limit=3");
        assert_eq!(
            list(&alice, root, "", &after_dir).await,
            ["a0", "b/c/d/e", "b/c/f"]
        );
        let inside = format!("cursor={root}a/y/z&limit=2");
        assert_eq!(list(&alice, root, "", &inside).await, ["a/y/z0", "a0"]);
        let back = format!("cursor={root}b/c/f&reverse=true&limit=3");
        assert_eq!(
            list(&alice, root, "", &back).await,
            ["b/c/d/e", "a0", "a/y/z0"]
        );
    }

    // Deleting every file removes the directories: the names are free for files again.
    for file in tree() {
        assert_eq!(alice.delete(&format!("{long}{file}")).await.status(), 204);
    }
    assert!(list(&alice, &long, "", "").await.is_empty());
    assert_eq!(alice.get(&long).await.status(), 404);
    for name in ["a", "b", "m"] {
        assert_eq!(
            alice
                .put(&format!("{long}{name}"), "now a file")
                .await
                .status(),
            201
        );
    }
    assert_eq!(list(&alice, &long, "", "").await, ["a", "b", "m"]);
    // The short tree was not touched.
    assert_eq!(
        list(&alice, "/pub/short/", "", "").await,
        expected_deep("", false)
    );
}
