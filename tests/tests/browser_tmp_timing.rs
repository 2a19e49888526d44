use std::time::Instant;
use headend_e2e::browser::Browser;
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timing() {
    for n in [4usize, 8] {
        let t = Instant::now();
        let bs = futures::future::join_all((0..n).map(|_| Browser::start())).await;
        let starts: Vec<_> = bs.iter().map(|b| b.startup_time().as_millis()).collect();
        let all = t.elapsed();
        let r = futures::future::join_all(bs.iter().map(|b| b.goto("data:text/html,<p>x</p>"))).await;
        assert!(r.iter().all(|r| r.is_ok()));
        for b in &bs { assert_eq!(b.text("p").await.unwrap(), "x"); }
        let t = Instant::now();
        futures::future::join_all(bs.into_iter().map(|b| async move { let t = Instant::now(); b.close().await.unwrap(); t.elapsed().as_millis() })).await;
        eprintln!("{n} at once: starts {starts:?} ms, all {all:?}, close {:?}", t.elapsed());
    }
}
