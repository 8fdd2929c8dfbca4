# sample.awk — a realistic usage sample for one tenant, as JSON lines
# (the `tally ingest` format, docs/cli.md): agent runs made of LLM and tool
# calls over the last 30 days, with a daily rhythm, several projects,
# agents, models and users, a few errors and timeouts, and costs in micro-USD.
#
#   awk -v seed=1 -v events=50000 -v now_us=$(date +%s)000000 -v prefix=acme -f sample.awk
BEGIN {
	srand(seed)
	split("support-bot,research,billing-ops,onboarding", projects, ",")
	split("planner,retriever,writer,reviewer,router", agents, ",")
	split("gpt-5,gpt-5-mini,claude-4-sonnet,claude-4-haiku,llama-4-70b", models, ",")
	split("250,40,300,80,60", in_price, ",")   # micro-USD per 1k input tokens
	split("1000,160,1500,400,60", out_price, ",")
	day = 86400 * 1000000
	for (i = 0; i < events; i++) {
		# Busier in working hours (UTC 8-18), quieter at night.
		t = now_us - int(rand() * 30 * day)
		hour = int((t % day) / 3600000000)
		if ((hour < 8 || hour > 18) && rand() < 0.6)
			t = t - (t % day) + (8 + int(rand() * 10)) * 3600000000 + int(rand() * 3600000000)
		if (t > now_us) t = now_us - int(rand() * 3600000000)
		r = rand()
		type = r < 0.65 ? "llm_call" : (r < 0.93 ? "tool_call" : "agent_run")
		p = 1 + int(rand() * rand() * 4)
		a = 1 + int(rand() * 5)
		m = 1 + int(rand() * rand() * 5)
		u = int(rand() * rand() * 400)
		s = rand()
		status = s < 0.955 ? "ok" : (s < 0.985 ? "error" : (s < 0.995 ? "timeout" : "cancelled"))
		if (type == "llm_call") {
			tin = 200 + int(rand() * rand() * 8000); tout = 50 + int(rand() * rand() * 2000)
			dur = 300 + int(rand() * rand() * 9000)
			cost = int(tin * in_price[m] / 1000 + tout * out_price[m] / 1000)
			model = models[m]
		} else if (type == "tool_call") {
			tin = 0; tout = 0; dur = 20 + int(rand() * rand() * 3000); cost = 0; model = ""
		} else {
			tin = 0; tout = 0; dur = 2000 + int(rand() * 60000); cost = 100 + int(rand() * 500); model = ""
		}
		printf("{\"event_id\":\"%s-%08d\",\"time\":%.0f,\"type\":\"%s\",\"project\":\"%s\",\"agent\":\"%s\",\"model\":\"%s\",\"user\":\"user-%03d\",\"status\":\"%s\",\"duration_ms\":%d,\"tokens_in\":%d,\"tokens_out\":%d,\"cost_micros\":%d}\n",
		       prefix, i, t, type, projects[p], agents[a], model, u, status, dur, tin, tout, cost)
	}
}
