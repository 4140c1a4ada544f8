"""The README's FastAPI service, as written there: ``uvicorn web.service:app`` in the tests.

Sessions, a cached route, a rate-limited route, SSE, a job enqueued under a lock and run by a
worker inside the app. It reads the server and namespace from ``REDIS_URL`` and
``REDKIT_NAMESPACE`` (the embedded Valkey without them).
"""

from typing import Any

from fastapi import Depends, FastAPI, HTTPException

from redkit.notify.web import allow_all
from redkit.web import CacheRule, LoggedInDep, RedkitDep, RedkitWeb, SessionDep

app = FastAPI()
web = RedkitWeb(app, cache=[CacheRule("/products", ttl=60, tags=["products"])])
app.router.routes.extend(web.notification_routes(authorize=allow_all))  # GET /events, /ws


async def ship(order: dict[str, str]) -> str:  # a job: runs in the worker below
    await web.bus.publish("orders", {"shipped": order["item"], "to": order["user"]})
    return f"{order['item']} shipped"


web.worker("orders", {"ship": ship})


@app.post("/login")
async def login(name: str, session: SessionDep) -> dict[str, str]:
    await session.login(name)  # a new session ID; the cookie is set
    return {"user": name}


@app.get("/me")
async def me(session: LoggedInDep) -> dict[str, str]:  # 401 without a live session
    return {"user": session.user_id}


@app.get("/products")  # cached for 60 s: X-Cache: MISS, then HIT
async def products() -> list[str]:
    return ["tea", "cake"]


@app.get("/search", dependencies=[Depends(web.rate_limit(5, 60))])  # 429 after 5 a minute
async def search(q: str) -> list[str]:
    return [p for p in ["tea", "cake"] if q in p]


@app.post("/orders", status_code=202)
async def order(item: str, session: LoggedInDep, rk: RedkitDep) -> dict[str, str]:
    async with rk.lock(f"stock:{item}", ttl=10):  # one order of an item at a time
        job = await rk.queue("orders").enqueue("ship", {"item": item, "user": session.user_id})
    return {"job": job.id}


@app.get("/orders/{job_id}")
async def order_state(job_id: str, rk: RedkitDep) -> dict[str, Any]:
    job = await rk.queue("orders").get(job_id)
    if job is None:
        raise HTTPException(404, "no such order")
    return {"state": job.state, "result": job.return_value}
