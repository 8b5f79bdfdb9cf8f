"""A notebook-style tour of AgentDB from Python: run it cell by cell in a
notebook, or whole against a running server:

    agentdb serve &                                  # 127.0.0.1:8080
    AGENTDB_URL=http://127.0.0.1:8080 python3 clients/python/example.py

Each "# %%" starts a cell. The test suite runs this file against a fresh
server (clients/python/tests/test_client.py), so it stays true.
"""

# %% Connect
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from agentdb_client import Client, NotFound  # noqa: E402

db = Client(os.environ.get("AGENTDB_URL", "http://127.0.0.1:8080"),
            api_key=os.environ.get("AGENTDB_API_KEY"))
print("server:", db.health())

# %% An agent that picks a row of the home page by daypart
db.put_agent("example-home", context_keys=["daypart"],
             reward_weights={"watch": 0.8, "click": 0.2, "rating": 0})
db.put_actions("example-home", [{"id": "news"}, {"id": "drama"},
                                {"id": "kids"}, {"id": "sport"}])
print("actions:", [a["id"] for a in db.list_actions("example-home")])

# %% Simulate viewers: in the evening drama is watched most
random.seed(1)
taste = {"news": 0.2, "drama": 0.7, "kids": 0.1, "sport": 0.4}
for i in range(300):
    d = db.decide("example-home", "viewer-%d" % (i % 20),
                  ["news", "drama", "kids", "sport"],
                  context={"daypart": "evening"})
    watched = random.random() < taste[d["action"]]
    db.reward("example-home", event_id=d["event_id"],
              signals={"watch_time_s": 1500 if watched else 60,
                       "duration_s": 1800, "clicked": True})

# %% What the agent learned: the agent-wide posterior of the evening state
d = db.decide("example-home", "newcomer", ["news", "drama", "kids", "sport"],
              context={"daypart": "evening"}, k=4)
p = db.policy("example-home", "*", d["state_key"])
for arm in sorted(p["arms"], key=lambda a: -a["mean"]):
    print("%-6s n=%-4d mean reward %.2f" % (arm["action"], arm["n"], arm["mean"]))
print("newcomer is shown:", d["action"])

# %% Memory: episodes and similar users
db.record_episodes("example-home", [
    {"user_id": "viewer-1", "embedding": [0.9, 0.1, 0.0], "action": "drama",
     "reward": 1.0},
    {"user_id": "viewer-2", "embedding": [0.1, 0.9, 0.0], "action": "sport",
     "reward": 0.5}])
print("nearest episode:", db.search_episodes("example-home", [1, 0, 0], k=1)[0])

# %% A user asks to be forgotten
print("before:", db.user_data("viewer-1")["data"])
print("erased:", db.erase_user("viewer-1")["erased"])
print("after: ", db.user_data("viewer-1")["data"])

# %% Clean up
db.delete_agent("example-home")
try:
    db.get_agent("example-home")
except NotFound:
    print("agent deleted")
db.close()
